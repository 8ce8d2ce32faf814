"""The reviewers' web app under `/review`: server-rendered pages, a little plain JavaScript."""
