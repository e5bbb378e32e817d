"""Device wire protocols as sans-I/O codecs: bytes in, messages out."""
