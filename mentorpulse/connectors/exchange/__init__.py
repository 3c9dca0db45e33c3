"""On-premises Exchange (2013 to Subscription Edition) through EWS, with exchangelib.

Each mailbox's calendar is probed with ``SyncFolderItems`` from the sync state the cursor
keeps, so a quiet mailbox costs one request per poll; a changed one is read over the
window with ``CalendarView`` and ``GetItem`` (see :mod:`.sync`). exchangelib is imported
only when an Exchange source syncs (:mod:`.ews` is the one module that touches it).
"""

from mentorpulse.connectors.exchange.sync import ExchangeConnector

__all__ = ["ExchangeConnector"]
