"""The accuracy-guarded optimisation search: trials, isolation, budgets, resume (issue 5, in progress)."""
