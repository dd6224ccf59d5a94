"""Running a study: the plan, the memory estimates, the scheduler and the store."""
