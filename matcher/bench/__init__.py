"""The recall benchmark: plant edited copies of real photos among distractors, search, score, write."""
