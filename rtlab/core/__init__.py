"""The streaming core: processor, pacing, scheduler, events, clock."""
