"""The citizen's side of Warta: USSD menus and SMS keywords on feature phones.

- ``ports``: what the citizen services need from storage (``CitizenDirectory``) and the small
  value types they exchange.
- ``ussd``: the pure USSD menu (``respond``): the input history in, one screen out.
- ``keywords``: SMS keywords (``DAFTAR``, ``STOP``, ``CEK`` …): a message in, a reply out.
- ``directory``: ``SqlCitizenDirectory``, the directory on the real database.
- ``routes``: the Africa's Talking USSD and inbound SMS callbacks (``install(app)``).
"""
