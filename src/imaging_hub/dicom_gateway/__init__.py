"""The clinic edge: DICOM SCP (C-ECHO, C-STORE), durable spool, forwarder to the hub.

Only :mod:`scp` imports pynetdicom; the spool and the forwarder know nothing of sockets.
"""
