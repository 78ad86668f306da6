"""Federation governance (DESIGN §10): signed membership, proposals and approvals, adopted
leaderlessly once k distinct members approve (the rule is in ``protocol/governance.py``)."""
