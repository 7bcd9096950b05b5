"""`make bench`: measure the service against an echo ceiling and in-process serving."""
