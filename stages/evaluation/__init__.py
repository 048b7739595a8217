"""eval's machinery apart from the stage (stages/eval.py): its metrics."""
