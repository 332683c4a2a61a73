"""The DataHub Actions plugin (extra ``provisioner[datahub]``): tokenize when a steward tags ``tokenize-now``.

A second intake beside ``web``: ``TokenizeAction.act()`` only records the request and queues a job in the
provisioner's PostgreSQL; the ``datahub`` queue's worker (``provisioner datahub-actions``) reads the dataset's
``pii-*`` columns from DataHub, tokenizes them with the tenant's credentials on the shared engine, and reports the
run on the dataset as a DataProcessInstance. A pipeline YAML names the plugin::

    action:
      type: "provisioner.datahub:TokenizeAction"
"""

from provisioner.datahub.action import TokenizeAction
from provisioner.datahub.config import TokenizeActionConfig

__all__ = ["TokenizeAction", "TokenizeActionConfig"]
