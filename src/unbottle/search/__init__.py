"""The accuracy-guarded optimisation search: trials, isolation, budgets, resume."""
