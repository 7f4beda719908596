"""Policy: decisions only. Modules here return values (Verdicts, replies); they never write to the
wire and never touch storage except through the store API's read methods."""
