"""The chat page (server/web/) driven in Debian's headless Chromium through Selenium."""
