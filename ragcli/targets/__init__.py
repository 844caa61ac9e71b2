"""Index targets. (Placeholder in the delta branch: the one-target-interface work owns this package.)"""
