"""What happens after training: evaluate.py, predict.py, export.py and report.py's work."""
