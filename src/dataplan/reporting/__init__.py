"""The report page: what each command's output answers, read from disk and rendered as HTML."""
