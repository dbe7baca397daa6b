from cloudseg.cli.main import main

# Guarded: processes started by `spawn` or `forkserver` (predict's readers and writers) import this module again.
if __name__ == "__main__":
    raise SystemExit(main())
