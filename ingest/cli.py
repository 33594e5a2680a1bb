"""`newspulse crawl` command."""
