"""Small models fksteer trains itself and ships, so that its first commands run offline.

    from fksteer.embedded.image_model import load_image_model      # Fashion-MNIST 16x16, CFG
    from fksteer.embedded.classifier import load_classifier        # "steering" and "judge"
    from fksteer.embedded.text_model import load_text_model        # fortunes masked diffusion LM
    from fksteer.embedded.minilm_text import load_minilm_text_model  # MiniLM encoder + MDLM delta

Weights live in ``weights/``; the scripts that trained them are in the repository's
``scripts/`` folder (seeded). Modules: ``fashion`` (the image data), ``image_model``, ``unet``
and ``schedulers`` (diffusers' UNet2DModel, DDPM and DDIM in plain torch, so that the image
model loads without diffusers), ``classifier``, ``corpora`` (the English text data),
``wordpiece`` (WordPiece detokenising), ``text_model`` (the default text model, trained from
scratch on fortunes) and ``minilm_text`` (``--model embedded-minilm``: a delta over the
all-MiniLM-L6-v2 wheel).
"""
