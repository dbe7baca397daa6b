"""Prints the tables of a gpu_suite.sh output folder: `python benchmarks/gpu_summary.py <folder>`."""

import csv
import json
import sys
from pathlib import Path

from profile_steps import format_profile
from speed import format_rows


def recipe_summary(recipe: dict, rows: list[dict]) -> str:
    """The 100-epoch run in a few lines, from its recipe100.json and metrics.csv rows."""
    epochs = [float(r["time/epoch_s"]) for r in rows if r.get("time/epoch_s")]
    steady = [float(r["train/images_per_s"]) for r in rows if r.get("train/images_per_s")][1:]  # after compiling
    validations = [float(r["time/validation_s"]) for r in rows if r.get("time/validation_s")]
    scores = [float(r["val/mIoU"]) for r in rows if r.get("val/mIoU")]
    lines = [
        f"the {recipe['epochs']}-epoch recipe: {'finished' if recipe['finished'] else 'stopped'} after "
        f"{recipe['seconds']:.0f} s, process start to exit; {len(epochs)} epochs logged"
    ]
    if epochs:
        lines.append(f"  first epoch (compilation included) {epochs[0]:.0f} s; all epochs {sum(epochs):.0f} s")
    if steady:
        lines.append(f"  training batches after the first epoch: {sum(steady) / len(steady):.0f} img/s on average")
    if validations:
        lines.append(f"  {len(validations)} validations, {sum(validations) / len(validations):.1f} s each; last mIoU "
                     f"{scores[-1]:.3f}")  # fmt: skip
    return "\n".join(lines)


def main(folder: Path) -> None:
    def result(name: str) -> dict | None:
        path = folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    if parity := result("parity"):
        print(f"\nparity, {parity['model']} {parity['size']}², against float64 on the CPU:")
        for name, check in parity["checks"].items():
            verdict = "PASS" if check["passed"] else "FAIL"
            print(f"  {name:<34} {check['relative_error']:.2e} (< {check['bound']:.0e}) {verdict}")
    if ladder := result("train_ladder"):
        first = ladder["rows"][0]
        print(f"\ntraining, {first['model']} {first['size']}², {first['device']}:\n{format_rows(ladder['rows'])}")
    if infer := result("infer_compare"):
        print(f"\ninference, whole {infer['fast']['size']}² images:\n{format_rows([infer['baseline'], infer['fast']])}")
    graphed = [
        row for path in sorted(folder.glob("infer_cuda_graphs_*.json")) for row in [json.loads(path.read_text())]
    ]
    if graphed:
        print(f"\ninference with CUDA graphs:\n{format_rows(graphed)}")
    if scene := result("infer_scene"):
        print(
            f"\nsliding window, one {scene['scene']}² scene, {scene['tiles']} tiles of {scene['tile']}² "
            f"(overlap {scene['overlap']}, {scene['tile_batch']} at a time, {scene['mode']}): "
            f"{scene['seconds_per_scene']:.3f} s, {scene['megapixels_per_s']:.1f} Mpx/s, "
            f"{scene['tiles_per_s']:.0f} tiles/s"
        )
    if profile := result("train_profile"):
        print(f"\nprofile, training step:\n{format_profile(profile)}")
    modes = [{**row, "mode": f"compile mode {row['recipe']['compile']}"}
             for row in (result("train_compiled"), result("train_cuda_graphs")) if row]  # fmt: skip
    if modes:
        print(f"\ntraining step, compiled, without and with CUDA graphs:\n{format_rows(modes)}")
    for source in ("png", "cache"):
        if data := result(f"data_{source}"):
            print(
                f"\nloader from {source}, {data['num_workers']} workers, batch {data['batch_size']}, crop "
                f"{data['crop_size']}: {data['images_per_s']:.0f} img/s "
                f"({data['images_per_s_per_worker']:.1f} per worker); an epoch's first batch after a pause: "
                f"{data['epoch_start_wait_s']:.3f} s"
            )
    metrics = folder / "train_recipe_metrics.csv"
    if metrics.is_file():
        rows = list(csv.DictReader(metrics.open()))

        def per_epoch(key: str, form: str) -> str:
            return ", ".join(f"{r['epoch']}: {float(r[key]):{form}}" for r in rows if r.get(key))

        print("\nrecipe run, per epoch:")
        print("  img/s of the training batches:", per_epoch("train/images_per_s", ".0f"))
        print("  seconds, whole epoch:", per_epoch("time/epoch_s", ".1f"))
        print("  seconds of validation:", per_epoch("time/validation_s", ".1f"))
        print("  validation mIoU:", per_epoch("val/mIoU", ".3f"))
    if recipe := result("recipe100"):
        print("\n" + recipe_summary(recipe, list(csv.DictReader((folder / "recipe100_metrics.csv").open()))))
    log = folder / "suite.log"
    if log.is_file():  # train()'s own account of its start-up, compilation and fit, a few lines per run
        timed = ("start-up:", "first training batch, compilation included:", "fit took")
        lines = [line for line in log.read_text().splitlines() if line.startswith(timed)]
        if lines:
            print("\ntraining runs, from their logs:\n  " + "\n  ".join(lines))
    profile = folder / "train_recipe_profile.txt"
    if profile.is_file():  # Lightning's SimpleProfiler: the costliest loop actions of the recipe run
        print("\nrecipe run, loop actions by total time:\n" + "\n".join(profile.read_text().splitlines()[5:17]))
    if predict := result("predict"):
        print(
            f"\ncloudseg predict, end to end: {predict['images']} images in {predict['seconds']:.1f} s, "
            f"{predict['images_per_s']:.0f} img/s ({predict['tile_batch']} at a time)"
        )
    if contention := result("writer_contention"):
        print(
            f"\n{contention['model']} forward, batch {contention['batch']} of {contention['side']}², uncompiled: "
            f"{contention['forward_ms_alone']:.1f} ms alone; beside {contention['writers']} writer threads "
            f"{contention['forward_ms_beside_threads']:.1f} ms ({contention['masks_per_s_threads']:.0f} masks/s), "
            f"beside as many writer processes {contention['forward_ms_beside_processes']:.1f} ms "
            f"({contention['masks_per_s_processes']:.0f} masks/s)"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
