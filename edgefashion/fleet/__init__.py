"""`edgefashion fleet`: a bundle to many devices over SSH (asyncssh), selftest, bench and verify on
each, their results fetched and compared. Runs on the workstation; needs the `fleet` extra."""
