"""Running Bouquet across processes or machines: SuperLink + SuperNodes instead of simulation."""
