"""fab tasks: a thin map from the command line onto deploy/."""

from invoke import Collection

from deploy.lab.tasks import lab

ns = Collection(lab)
