"""Worker modules shipped with jobrunner as working examples."""
