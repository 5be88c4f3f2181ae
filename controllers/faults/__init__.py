"""Faults as part of the experiment: the scenario's `faults:` applied on schedule during `parallax run`
(schedule.py), what happened written to the run folder (record.py), and what each split lost (blast_radius.py)."""
