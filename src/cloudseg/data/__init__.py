"""Reading, checking, augmenting and generating RGB + NIR cloud datasets."""
