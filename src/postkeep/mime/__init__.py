"""MIME: message structure with byte offsets and the summary IMAP FETCH is answered from."""
