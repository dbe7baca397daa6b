"""Ways out of a trained model: prediction on images of any size, Kaggle submissions and scores, export."""
