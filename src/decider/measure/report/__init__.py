"""decider report: lift per segment from the exposure and outcome files, with a verdict on
each segment; the statistics libraries it needs are the optional `report` extra."""
