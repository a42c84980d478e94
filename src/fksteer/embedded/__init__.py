"""Small models fksteer trains itself and ships, so that its first commands run offline.

    from fksteer.embedded.image_model import load_image_model      # Fashion-MNIST 16x16, CFG
    from fksteer.embedded.classifier import load_classifier        # "steering" and "judge"
    from fksteer.embedded.text_model import load_text_model        # masked diffusion LM

Weights live in ``weights/``; the scripts that trained them are in the repository's
``scripts/`` folder (seeded). Modules: ``fashion`` (the data), ``image_model``, ``classifier``,
``text_model``.
"""
