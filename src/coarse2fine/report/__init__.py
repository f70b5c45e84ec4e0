"""Measuring and reporting: FLOPs per phase before training (:mod:`.accounting`), step time and
``bench`` (:mod:`.timing`), the paper's savings tables (:mod:`.savings`), plots and the report
files of an experiment (:mod:`.plots`), and the budget planner (:mod:`.planner`)."""
