"""``loreal doctor``: a preflight of every trainer on the user's machine (measurements in :mod:`.checks`,
the shipped configs as read without Dassl in :mod:`.configs`, the command in :mod:`.cli`)."""
