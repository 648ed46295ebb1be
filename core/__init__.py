"""The bottom layer, below nets, attacks and data: the TensorFlow-2 workarounds that
tensorpack 0.11 and Horovod 0.28 need (``compat``, applied when imported: every package that
builds graphs imports it first), Horovod's collectives (``dist``), safe file writes
(``files``) and the provenance recorded with every result (``provenance``). Nothing here
imports another package of the project, and ``files`` and ``provenance`` do not load
TensorFlow."""
