"""Flower's configuration, read from the one settings object (core/settings.py).

`celery -A workers flower` loads ``flowerconfig.py`` from the current directory (Flower's
``--conf`` default, see ``flower/options.py``) with tornado's ``parse_config_file``: the file
is executed and every module-level name that matches a Flower option (``address``, ``port``,
``basic_auth``) becomes that option. Flags on the command line still win over this file.

Flower can revoke and terminate tasks, so outside the ``development`` environment it refuses
to start without a password (``MLOPS_FLOWER__PASSWORD``). It listens on 127.0.0.1 unless
``MLOPS_FLOWER__ADDRESS`` says otherwise (docker-compose.yaml sets 0.0.0.0 inside its network).

Flower's ``/metrics`` (Prometheus) and ``/healthcheck`` handlers are NOT behind basic auth in
Flower 2.x (they lack ``@web.authenticated``), so Prometheus scrapes them without credentials;
keep Flower's port on a private network. Everything else (UI, ``/api/*``) answers 401 without
credentials.

Run it directly (``python flowerconfig.py``) to check the configuration without starting Flower.
"""

from __future__ import annotations

import sys

from core.settings import Settings, get_settings

_OPEN_ENVIRONMENTS = ("development",)


def flower_options(settings: Settings) -> dict[str, object]:
    """Flower's options from settings; exit with a message when the password is required."""
    flower = settings.flower
    env = settings.env
    options: dict[str, object] = {"address": str(flower.address), "port": int(flower.port)}
    if flower.password:
        if not flower.user:
            raise SystemExit("flower: MLOPS_FLOWER__USER is empty; basic auth needs a user name")
        options["basic_auth"] = [f"{flower.user}:{flower.password}"]
    elif env not in _OPEN_ENVIRONMENTS:
        raise SystemExit(
            f"flower: refusing to start without a password in the {env!r} environment: "
            "set MLOPS_FLOWER__PASSWORD (basic auth is only optional when MLOPS_ENV=development)"
        )
    return options


def list_every_declared_queue() -> None:
    """Make Flower's Broker page (and ``/api/queues/length``) list every queue the app declares.

    Flower lists the queues live workers consume (``BaseHandler.get_active_queue_names``), and
    the declared ones only when no worker is known: with predict workers up and no trainer,
    ``train`` and a retrain stuck in it were invisible. Declared queues: ``task_queues``
    (workers/config.py). Patched here because this file is the one Flower executes at start.
    """
    try:
        from flower.views import BaseHandler
    except ImportError:  # `python flowerconfig.py` without the worker extra
        return
    consumed = BaseHandler.get_active_queue_names
    if getattr(consumed, "lists_declared", False):
        return

    def get_active_queue_names(self) -> list[str]:
        declared = {queue.name for queue in self.capp.conf.task_queues or () if queue.name}
        return sorted(set(consumed(self)) | declared)

    get_active_queue_names.lists_declared = True
    BaseHandler.get_active_queue_names = get_active_queue_names


_options = flower_options(get_settings())
list_every_declared_queue()
address = _options["address"]
port = _options["port"]
if "basic_auth" in _options:
    basic_auth = _options["basic_auth"]

if __name__ == "__main__":
    _shown = {k: ("<set>" if k == "basic_auth" else v) for k, v in _options.items()}
    sys.stdout.write(f"flower options: {_shown}\n")
