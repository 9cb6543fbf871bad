"""Models from elsewhere: adapters and the diffusers reader (public face: `scoresde.interop`)."""
