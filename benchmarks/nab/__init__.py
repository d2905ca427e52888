"""NAB benchmark: run a detector over a NAB-layout directory and score it (see __main__)."""
