"""The command lines' configuration: named presets (``presets``: every default comes from
one; importing it loads no TensorFlow) and the flags both programs share, parsed in one place
into architectures and attackers (``flags``)."""
