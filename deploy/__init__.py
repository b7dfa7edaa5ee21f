"""fabstack: provision and deploy Django sites (nginx + gunicorn) over SSH."""
