"""Process lifecycle: `postkeep serve` (the main process) and the IMAP worker processes."""
