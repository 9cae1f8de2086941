"""What every layer may use: the user-error type, object-storage paths, optional packages,
progress bars. Imports no other ipmix_cli sub-package."""
