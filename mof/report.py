"""`python -m mof.report DIR...`: merge evaluation results into one table, plot and correlation."""

from .evaluation.report import main

if __name__ == "__main__":
    main()
