"""Shared library of the WhatsApp inbox services.

Split by concept: ``settings``, ``logging``, ``metrics``, ``health``, ``broker``, ``store``,
``contracts`` and ``whatsapp``. Each service imports what it needs from here.
"""

__version__ = "0.1.0"
