"""lobes: assembled models a recipe builds in its YAML.

hf_speech   wav2vec2-family encoders from a local folder (``HFSpeechEncoder``), the CTC head
            (``CTCModel``) and the log-probability module of exported ASR folders
"""
