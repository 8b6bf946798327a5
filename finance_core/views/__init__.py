"""What people read: the named queries behind every number, pages, trends, exports."""
