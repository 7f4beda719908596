"""The webmail (`postkeep.web.mail.pages`): the read side (mailboxes, message lists paged,
sorted, searched and threaded, the reading view with its sanitised HTML frame, attachment
downloads), in the layout the action and compose pages plug into (templates/mail.html)."""
