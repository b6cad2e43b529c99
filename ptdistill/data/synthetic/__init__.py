"""The synthetic scene simulator that writes the default dataset; the SemanticKITTI reader reads it.

`street` builds a random street of labelled primitives, `raycast` intersects rays with them, `lidar`
is the spinning sensor that casts its rays, and `generate` writes its scans in SemanticKITTI's layout.
"""
