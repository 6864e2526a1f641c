"""Reading results: frontiers, regression checks and rescoring; never loads a model unless rerunning."""
