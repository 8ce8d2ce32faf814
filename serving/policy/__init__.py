"""The routing policy: its settings (`config`), photo quality (`photo_quality`) and the
rules that send an item to the model alone, to people, or back for photos (`routing`)."""
