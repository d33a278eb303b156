"""``python -m unbottle.cli`` runs the same app as the ``unbottle`` console script."""

from unbottle.cli.main import app

app()
