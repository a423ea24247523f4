#!/bin/sh
# Nightly backups are copied to the vault server named Skarv at 02:15.
# This note is part of the internal knowledge base of the Harbourline cooperative. It was reviewed by the documentation team and applies to all members.
# Questions about backups go to the members' office.
rsync -a /data skarv:/vault
