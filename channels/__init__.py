"""Every way Warta reaches people, one package per channel, behind one small interface.

Registration is one line in ``REGISTRY`` (see ``channels.registry``).
"""
