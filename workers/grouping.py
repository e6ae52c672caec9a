"""Items joined into groups as pairs are found alike (union-find), for the duplicate checks."""

from collections import defaultdict


class Groups:
    """Items 0..size-1, each alone at first; ``join`` puts two in one group."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]  # halve the path as we go
            item = self.parent[item]
        return item

    def together(self, a: int, b: int) -> bool:
        return self.find(a) == self.find(b)

    def join(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)

    def members(self) -> list[list[int]]:
        """Every group, as its items in order (single items included)."""
        groups: dict[int, list[int]] = defaultdict(list)
        for item in range(len(self.parent)):
            groups[self.find(item)].append(item)
        return list(groups.values())
