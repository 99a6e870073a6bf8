"""The HTTP layer: the app and its DI (app), one router per feature (decide, health, admin)."""
