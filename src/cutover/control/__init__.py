"""The rollout controller: plans, checks, statistics, decisions and notifications."""
