"""Administration of meta: the ``/admin/users`` pages and the ``python -m meta.admin`` commands."""
